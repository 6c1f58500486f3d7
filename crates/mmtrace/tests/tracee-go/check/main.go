// Reads each line of the file named by its argument into Tracee's trace.Event and prints, per
// line, either `ok EVENTID EVENTNAME` followed by `NAME:GOTYPE` for each argument, or
// `error: ...`.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aquasecurity/tracee/types/trace"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	lines := bufio.NewScanner(f)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		var e trace.Event
		if err := json.Unmarshal(lines.Bytes(), &e); err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("ok %d %s", e.EventID, e.EventName)
		for _, a := range e.Args {
			fmt.Printf(" %s:%T", a.Name, a.Value)
		}
		fmt.Println()
	}
	if err := lines.Err(); err != nil {
		fmt.Println("error:", err)
	}
}
