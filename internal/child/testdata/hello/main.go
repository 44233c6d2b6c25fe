// Command hello is the tiny program that internal/child's tests build: it
// prints its arguments, so that a test can see that the build ran and what
// reached the binary.
package main

import (
	"os"
	"strings"
)

func main() {
	_, _ = os.Stdout.WriteString("hello " + strings.Join(os.Args[1:], " ") + "\n")
}
