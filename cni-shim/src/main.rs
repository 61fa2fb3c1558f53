//! `sluice-cni`, the CNI plugin. Not written yet (its own issue): it answers
//! every command with the CNI error format, code 4 ("invalid environment"
//! would be wrong; 7 is "invalid network config"), so that a runtime that
//! calls it by mistake gets a clear error rather than silence.

fn main() {
    let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
    println!(
        "{{\"cniVersion\":\"1.1.0\",\"code\":7,\"msg\":\"sluice-cni is not implemented yet\",\"details\":\"CNI_COMMAND={}\"}}",
        cmd.replace('"', "")
    );
    std::process::exit(1);
}
