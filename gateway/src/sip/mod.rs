//! SIP for calls from the carrier trunk: a sans-IO core (parse/serialize, RFC 3261 transactions
//! and dialogs) driven by tokio UDP and TCP transports at the edge.
