//! smoke
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let host = connhost::Connhost::start(&connhost::HostConfig::with_plugins_dir(dir));
    println!(
        "{}",
        serde_json::to_string_pretty(&host.providers()).unwrap()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(host.load_report()).unwrap()
    );
}
