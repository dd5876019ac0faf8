//! An application message as the broker keeps it: owned, immutable, and shared by
//! every subscriber queue and the retained store through an `Arc`.
