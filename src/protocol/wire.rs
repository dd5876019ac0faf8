//! Primitive field readers and writers shared by decode and encode: variable byte
//! integers, two-byte integers, length-prefixed strings and binary data.
