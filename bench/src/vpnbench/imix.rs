//! TODO(issue 15): the IMIX packet-size generator.
