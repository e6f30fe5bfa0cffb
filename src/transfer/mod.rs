//! Downloads: fetching content by id from every peer that holds it.
//!
//! - [`planner`]: which piece goes to which peer (a plain struct, no I/O).

pub mod planner;
