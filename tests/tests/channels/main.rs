//! The message channels end to end: WeChat, SMS, the web form (in a browser), Open311, and how
//! the channels agree on one order model.

mod channel_agreement;
mod channel_open311;
mod channel_sms;
mod channel_web;
mod channel_wechat;
