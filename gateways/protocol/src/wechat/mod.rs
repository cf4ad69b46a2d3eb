//! The WeChat official-account callback protocol as pure functions: no I/O,
//! no HTTP. The callback endpoint and the WeChat simulator build on these.
//!
//! - [`xml`]: a bounded XML reader that refuses DOCTYPE, entity declarations
//!   and unknown entity references (the 2018 XXE payloads), and CDATA writing;
//! - [`crypto`]: callback signatures and the safe-mode AES message crypt
//!   (32-byte PKCS#7, appid tail);
//! - [`message`]: typed inbound messages, events and component
//!   (third-party platform) authorization events, with their dedup keys;
//! - [`reply`]: passive reply builders and the encrypted reply envelope.
//!
//! Order at the edge: bound the body, check `signature` (and in safe mode
//! `msg_signature`) before decrypting, so the decrypt errors can never act as
//! a padding oracle; then parse the plaintext with the same bounded reader.

pub mod crypto;
pub mod message;
pub mod reply;
pub mod xml;
