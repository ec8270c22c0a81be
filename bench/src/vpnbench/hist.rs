//! TODO(issue 15): HdrHistogram helpers (record, merge, percentiles → schema::Percentiles).
