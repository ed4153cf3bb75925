//! mlx5vf core
#![no_std]
#![forbid(unsafe_code)]
