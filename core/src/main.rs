// Until the core dispatches builtins, nothing outside the tests calls them.
#[allow(dead_code)]
mod builtins;
#[allow(dead_code)]
mod sys;

fn main() {}
