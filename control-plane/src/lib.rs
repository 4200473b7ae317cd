//! Placeholder; filled by the control-plane issue.
