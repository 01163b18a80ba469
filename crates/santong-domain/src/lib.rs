//! Santong's domain: the types and rules every context shares, with no IO.
//!
//! Values from the outside world (codes, query parameters, passwords) are parsed here into
//! newtypes once, at the edge; everything further in takes the parsed type.

pub mod audit;
pub mod identity;
pub mod import;
pub mod lifecycle;
pub mod net;
pub mod oidc;
pub mod oneroster;
pub mod paging;
pub mod password;
pub mod quality;
pub mod region;
pub mod registry;
pub mod staff;
pub mod totp;
