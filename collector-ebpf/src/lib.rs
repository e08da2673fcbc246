#![no_std]
// A library target, so the agent crate can declare this crate as a build dependency.
