//! Findings from a snapshot of everything `vpnctl diagnose` gathered: a pure function.

use crate::api::{DataplaneStatus, EventRecord, Finding, IkedStatus, ListReport, StatsReport};

/// Everything diagnose looked at. Missing parts are `None` (and say why in `unchecked`).
#[derive(Debug, Clone, Default)]
pub struct DiagnoseInput {
    pub now_unix_ms: u64,
    pub iked: Option<IkedStatus>,
    pub list: Option<ListReport>,
    pub events: Vec<EventRecord>,
    pub dataplane: Option<DataplaneStatus>,
    /// Two snapshots of the dataplane's counters, `window_s` apart (rates).
    pub stats_before: Option<StatsReport>,
    pub stats_after: Option<StatsReport>,
    pub system: Option<super::probe::SystemSnapshot>,
    /// The configuration file loaded by diagnose itself: Err is the loader's message.
    pub config: Option<Result<(), String>>,
    pub unchecked: Vec<String>,
}

/// One finding per problem, most severe first.
pub fn analyze(input: &DiagnoseInput) -> Vec<Finding> {
    let _ = input;
    Vec::new()
}
