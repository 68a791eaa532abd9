//! The `cairn` binary: parses arguments and hands over to [`cairn_server::cli`].

fn main() -> std::process::ExitCode {
    cairn_server::cli::main()
}
