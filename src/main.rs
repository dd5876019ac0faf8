//! The `midge` command: flags, config, logging, then hand over to the server.

fn main() {
    unimplemented!("server helper")
}
