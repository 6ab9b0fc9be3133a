//! HTTP transport for replica-core (see issue: replica-http).
