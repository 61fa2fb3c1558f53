//! `sluice-cni`, the CNI plugin. Not written yet (its own issue). Until it
//! is, every command answers in the CNI error format with code 7 ("invalid
//! network configuration": this network cannot be set up by this binary),
//! so that a runtime that calls it gets a clear error and not silence.

fn main() {
    let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
    println!(
        "{{\"cniVersion\":\"1.1.0\",\"code\":7,\"msg\":\"sluice-cni is not implemented yet\",\"details\":\"CNI_COMMAND={}\"}}",
        cmd.replace('"', "")
    );
    std::process::exit(1);
}
