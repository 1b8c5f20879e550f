//! What the sensor is told to do while it runs (the command line is `crate::flags`):
//! - `settings`: the recording settings that change while it runs (`/api/v1/config`, the
//!   targeting file's `pcapdump`, flags at start), with one precedence;
//! - `targeting`: the targeting file (what to record, Kubeshark's keys), followed while it
//!   changes.
pub mod settings;
pub mod targeting;
