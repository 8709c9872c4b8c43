fn main() {
    std::process::exit(atrest::cli::main());
}
