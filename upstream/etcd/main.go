// Command etcd is a single-member etcd for one lab's kube-apiserver, built from
// go.etcd.io/etcd/server/v3/embed at the version the Kubernetes release pins, so
// the lab never depends on the distribution's (older) etcd.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/embed"
)

func urls(flagName, value string) []url.URL {
	u, err := url.Parse(value)
	if err != nil {
		log.Fatalf("--%s: %v", flagName, err)
	}
	return []url.URL{*u}
}

func main() {
	cfg := embed.NewConfig()
	name := flag.String("name", "default", "member name")
	dir := flag.String("data-dir", "default.etcd", "data directory")
	client := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URL")
	peer := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync (a throw-away lab store)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Printf("etcd Version: %s\n", version.Version)
		return
	}

	cfg.Name = *name
	cfg.Dir = *dir
	cfg.ListenClientUrls = urls("listen-client-urls", *client)
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = urls("listen-peer-urls", *peer)
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	select {
	case <-server.Server.ReadyNotify():
		log.Printf("etcd %s ready on %s", version.Version, *client)
	case <-time.After(60 * time.Second):
		server.Server.Stop()
		log.Fatal("etcd took more than 60 s to start")
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-server.Err():
		log.Fatal(err)
	case <-signals:
	}
}
