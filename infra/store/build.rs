// `sqlx::migrate!` embeds schemas/migrations at compile time; rebuild when it changes.
fn main() {
    println!("cargo:rerun-if-changed=../../schemas/migrations");
}
