fn main() -> std::process::ExitCode {
    protogate::run()
}
