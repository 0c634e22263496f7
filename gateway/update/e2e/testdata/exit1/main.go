// Command exit1 fails at once: it stands in for a supervisor binary that
// cannot start and for a collector image that exits as soon as it runs.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "exit1: failing on purpose")
	os.Exit(1)
}
