//! Environments for gigpo: the [`Environment`] trait, action parsing, the built-in environments
//! (Sokoban, FrozenLake), a pool that steps many instances as one batch, and, with the `remote`
//! feature (on by default), environments in other processes and a server for them.

pub mod action;
pub mod env;
pub mod frozenlake;
pub mod gridfile;
pub mod levels;
pub mod pool;
#[cfg(feature = "remote")]
pub mod remote;
pub mod seed;
pub mod sokoban;
pub mod spec;

pub use env::{EnvError, Environment, Observation, StepOutcome};
