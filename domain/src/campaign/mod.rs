//! Campaigns: lotteries whose draws anyone can recompute from the events.

pub mod draw;
