use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sluice-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    /// Written beside and renamed over, as editors do: a new inode.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SVC: &str = "apiVersion: v1
kind: Service
metadata: { name: web }
spec: { clusterIP: 198.19.0.10, ports: [{ port: 80, targetPort: 8080 }] }
";

const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
endpoints: [{ addresses: [198.18.1.3] }]
";

fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Apply(o) => format!("apply {}", o.reference()),
            Event::Delete(r) => format!("delete {r}"),
        })
        .collect()
}

#[test]
fn documents_lists_and_default_namespaces_are_read_and_other_kinds_ignored() {
    let d = Dir::new("read");
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
    d.write("a.yaml", &format!("{SVC}---\n{deploy}---\n"));
    d.write(
        "b.yaml",
        &format!(
            "apiVersion: v1\nkind: List\nitems:\n{}",
            SLICE
                .lines()
                .enumerate()
                .map(|(i, l)| if i == 0 {
                    format!("- {l}\n")
                } else {
                    format!("  {l}\n")
                })
                .collect::<String>()
        ),
    );
    d.write("notes.txt", "not a manifest");
    let mut src = FileSource::new(&d.0);
    let scan = src.scan();
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert_eq!(
        names(&scan.events),
        [
            "apply Service default/web",
            "apply EndpointSlice default/web-1"
        ]
    );
    assert_eq!(scan.ignored, 1, "the Deployment");
    // Nothing changed: nothing to say.
    assert!(src.scan().events.is_empty());
}

#[test]
fn edits_deletions_and_bad_files() {
    let d = Dir::new("edit");
    d.write("web.yaml", &format!("{SVC}---\n{SLICE}"));
    let mut src = FileSource::new(&d.0);
    assert_eq!(src.scan().events.len(), 2);

    // An object taken out of the file is deleted; the one left is applied.
    d.write("web.yaml", SVC);
    assert_eq!(
        names(&src.scan().events),
        [
            "apply Service default/web",
            "delete EndpointSlice default/web-1"
        ]
    );

    // A file that does not parse is refused with its place; what it gave
    // before keeps serving (no delete).
    d.write(
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
    );
    let scan = src.scan();
    assert!(scan.events.is_empty(), "{:?}", names(&scan.events));
    assert_eq!(scan.problems.len(), 1);
    let p = &scan.problems[0];
    assert!(p.path.ends_with("web.yaml") && p.at.contains("line"), "{p}");
    // A schema error names the kind.
    d.write("web.yaml", &SVC.replace("port: 80", "port: eighty"));
    let scan = src.scan();
    assert!(scan.events.is_empty());
    assert!(
        scan.problems[0].reason.contains("Service (v1)"),
        "{}",
        scan.problems[0]
    );
    // Mended: applied again.
    d.write("web.yaml", SVC);
    assert_eq!(names(&src.scan().events), ["apply Service default/web"]);

    // A deleted file deletes its objects.
    std::fs::remove_file(d.0.join("web.yaml")).unwrap();
    assert_eq!(names(&src.scan().events), ["delete Service default/web"]);
}

#[test]
fn an_object_in_two_files_belongs_to_the_first() {
    let d = Dir::new("twice");
    d.write("a.yaml", SVC);
    d.write("b.yaml", &SVC.replace("198.19.0.10", "198.19.0.11"));
    let mut src = FileSource::new(&d.0);
    let scan = src.scan();
    assert_eq!(names(&scan.events), ["apply Service default/web"]);
    assert_eq!(scan.problems.len(), 1);
    assert!(scan.problems[0].path.ends_with("b.yaml"));
    assert!(
        scan.problems[0].reason.contains("a.yaml"),
        "{}",
        scan.problems[0]
    );
    // Once a.yaml is gone, b.yaml, which wanted the object, is read again
    // in the same scan and gives it.
    std::fs::remove_file(d.0.join("a.yaml")).unwrap();
    let scan = src.scan();
    assert_eq!(
        names(&scan.events),
        ["delete Service default/web", "apply Service default/web"]
    );
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert!(src.scan().events.is_empty());
}

#[test]
fn a_missing_directory_is_a_problem_and_deletes_nothing() {
    let mut src = FileSource::new("/nonexistent/sluice-manifests");
    let scan = src.scan();
    assert!(scan.events.is_empty());
    assert_eq!(scan.problems.len(), 1);
    assert_eq!(scan.problems[0].at, "directory");
}
