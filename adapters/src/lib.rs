//! # adapters: from any channel to one work order
//!
//! This crate owns what every channel has in common: the [`WorkOrder`](work_order::WorkOrder)
//! schema that the whole gateway produces and delivers (published as JSON Schema in
//! `adapters/schema/work-order.schema.json`), the [order number](order_number) citizens read out
//! and key in, the [app/integrator submission](submission) format with its field-precise
//! validation, and [normalization](normalize) (kind, urgency, emergency referral, masking of
//! personal data in logs). Channel adapters (WeChat, SMS, web form, Open311, phone) each turn their
//! own wire format into a [`Submission`](submission::Submission) and leave storage and delivery to
//! the gateway. Everything here is pure: no I/O, no clock, so it is tested and fuzzed alone.

pub mod normalize;
pub mod open311;
pub mod order_number;
pub mod sms;
pub mod submission;
pub mod webform;
pub mod wechat;
pub mod work_order;

pub use order_number::OrderNumber;
pub use submission::{Submission, SubmissionError};
pub use work_order::WorkOrder;
