//! The Azure SQL / SQL Server gateway: a wire-level TDS proxy.

pub mod codec;
