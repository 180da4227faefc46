//! IVR flows through the built binary: `gateway flows check`, `simulate` and `graph`, and live
//! reload in a running gateway.

mod flows_live;
