// A runtime's side of CNI through libcni, the library containerd and
// CRI-O call plugins with: it reads a .conflist, runs the chain for ADD,
// CHECK or DEL with the result cache libcni keeps, and prints the result.
// Built by cni-shim/tests/cni.rs from Debian's golang-github-appc-cni-dev
// (GOPATH mode, offline).
//
// usage: libcni-driver add|check|del CONFLIST CNI_PATH CACHE_DIR CONTAINERID NETNS IFNAME
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/containernetworking/cni/libcni"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 8 {
		fmt.Fprintln(os.Stderr, "usage: libcni-driver add|check|del CONFLIST CNI_PATH CACHE_DIR CONTAINERID NETNS IFNAME")
		os.Exit(2)
	}
	cmd, conflist, path, cache := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		fail("conflist", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{path}, cache, nil)
	rt := &libcni.RuntimeConf{
		ContainerID: os.Args[5],
		NetNS:       os.Args[6],
		IfName:      os.Args[7],
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web"}},
	}
	ctx := context.Background()
	switch cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail("ADD", err)
		}
		out, err := json.Marshal(res)
		if err != nil {
			fail("result", err)
		}
		fmt.Println(string(out))
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("CHECK", err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("DEL", err)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
		os.Exit(2)
	}
}
