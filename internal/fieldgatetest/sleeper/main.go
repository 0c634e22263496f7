// Command sleeper stands in for a collector in the supervisor's end-to-end
// tests: it logs its environment and config file, then a line per second
// until SIGTERM (exit 0). EXIT_AFTER=DURATION makes it exit 3 after that long.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg, err := os.ReadFile(os.Getenv("COLLECTOR_CONFIG"))
	fmt.Printf("sleeper %s started: POLL_INTERVAL=%s GATEWAY_ID=%s config=%d bytes err=%v\n",
		os.Getenv("COLLECTOR_NAME"), os.Getenv("POLL_INTERVAL"), os.Getenv("GATEWAY_ID"), len(cfg), err)
	if f, err := os.Create(os.Getenv("DATA_DIR") + "/alive"); err == nil {
		f.Close()
	} else {
		fmt.Println("data dir not writable:", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var exit <-chan time.Time
	if d, err := time.ParseDuration(os.Getenv("EXIT_AFTER")); err == nil {
		exit = time.After(d)
	}
	tick := time.NewTicker(time.Second)
	for n := 1; ; n++ {
		select {
		case <-sig:
			fmt.Println("sleeper stopping")
			return
		case <-exit:
			fmt.Println("sleeper failing")
			os.Exit(3)
		case <-tick.C:
			fmt.Println("tick", n)
		}
	}
}
