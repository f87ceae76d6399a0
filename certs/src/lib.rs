//! placeholder, replaced by the certs helper
