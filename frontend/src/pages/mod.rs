pub mod fleet;
pub mod login;
