//! The piece planner.
