fn main() {
    // A user mistake must never show a Rust backtrace: bugs get one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("imgbuild: internal error (this is a bug, please report it): {info}");
    }));
    let cli = match imgbuild::face::cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    std::process::exit(imgbuild::face::app::run(cli));
}
