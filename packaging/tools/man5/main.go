// Command man5 writes mcpgw.toml(5), the manual page of the
// configuration file, from docs/configuration.md: one source for the
// reference, so the page lists every key the docs do (a test checks
// those against the config's own keys).
//
//	go run ./man5 ../../docs/configuration.md > mcpgw.toml.5
//
// It knows the little Markdown that file uses: headings, paragraphs,
// lists, fenced code and the key tables.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

var (
	code = regexp.MustCompile("`([^`]*)`")
	link = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// inline turns a line of Markdown into roff: code in bold, links as
// their text, backslashes and hyphens escaped.
func inline(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = link.ReplaceAllString(s, "$1")
	s = code.ReplaceAllStringFunc(s, func(m string) string {
		return `\fB` + strings.ReplaceAll(m[1:len(m)-1], "-", `\-`) + `\fR`
	})
	s = strings.ReplaceAll(s, "**", "")
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: man5 docs/configuration.md")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "man5:", err)
		os.Exit(1)
	}
	defer f.Close()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintln(w, `.TH MCPGW.TOML 5 "2026-12-07" "mcpgw" "File Formats"`)
	fmt.Fprintln(w, ".SH NAME")
	fmt.Fprintln(w, `mcpgw.toml \- configuration of the mcpgw Modbus gateway`)
	fmt.Fprintln(w, ".SH SYNOPSIS")
	fmt.Fprintln(w, ".I /etc/mcpgw/config.toml")
	fmt.Fprintln(w, ".SH DESCRIPTION")
	sc := bufio.NewScanner(f)
	inCode, para := false, false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			if inCode {
				fmt.Fprintln(w, ".EE")
			} else {
				fmt.Fprintln(w, ".PP")
				fmt.Fprintln(w, ".EX")
			}
			inCode = !inCode
		case inCode:
			fmt.Fprintln(w, strings.ReplaceAll(strings.ReplaceAll(line, `\`, `\e`), "-", `\-`))
		case strings.HasPrefix(line, "# "):
			// the title: the page's NAME says it
		case strings.HasPrefix(line, "## "):
			fmt.Fprintln(w, ".SH "+strings.ToUpper(inline(strings.ReplaceAll(line[3:], "`", ""))))
			para = false
		case strings.HasPrefix(line, "| key |"), strings.HasPrefix(line, "|---"):
		case strings.HasPrefix(line, "| `"):
			cells := strings.Split(strings.Trim(line, "| "), " | ")
			if len(cells) != 3 {
				fmt.Fprintf(os.Stderr, "man5: a table row without three cells: %s\n", line)
				os.Exit(1)
			}
			fmt.Fprintln(w, ".TP")
			fmt.Fprintln(w, inline(cells[0]))
			if d := strings.TrimSpace(cells[1]); d != "" {
				fmt.Fprintln(w, "Default: "+inline(d)+".")
				fmt.Fprintln(w, ".br")
			}
			fmt.Fprintln(w, inline(cells[2]))
		case strings.HasPrefix(line, "- "):
			fmt.Fprintln(w, ".IP \\(bu 2")
			fmt.Fprintln(w, inline(line[2:]))
			para = true
		case strings.TrimSpace(line) == "":
			para = false
		default:
			if !para {
				fmt.Fprintln(w, ".PP")
				para = true
			}
			fmt.Fprintln(w, inline(strings.TrimSpace(line)))
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "man5:", err)
		os.Exit(1)
	}
	fmt.Fprintln(w, ".SH SEE ALSO")
	fmt.Fprintln(w, ".BR mcpgw (1)")
}
