// Command hello is the tiny static binary the ociimage tests pack into images.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Printf("hello from %s/%s\n", runtime.GOOS, runtime.GOARCH)
	os.Exit(0)
}
