package runbook

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidEnvName reports whether n may name a variable a run is given.
func ValidEnvName(n string) bool { return envNameRE.MatchString(n) }

// yamlOf returns the parsed first yaml block of a section that is present
// and not empty. ok is false when there is nothing to read (the missing or
// empty section is reported already, or the block is missing and that is
// reported here with noBlock's message).
func (rb *Runbook) yamlOf(section string, noBlock Code, msg string) (*yaml.Node, bool) {
	body, found := rb.Sections[section]
	if !found || strings.TrimSpace(body) == "" {
		return nil, false
	}
	src, _, ok := block(body, "yaml")
	if !ok {
		rb.problem(noBlock, msg)
		return nil, false
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		rb.problem(CodeInvalidYAML, fmt.Sprintf("%s section has invalid YAML: %v", section, err))
		return nil, false
	}
	if len(doc.Content) == 0 {
		return nil, true // an empty block: nothing required
	}
	n := doc.Content[0]
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		rb.problem(CodeInvalidYAML, section+" section YAML must be a mapping")
		return nil, false
	}
	// A key written twice is ambiguous: stage0's YAML reader kept the
	// last, so "roles: ops" then "roles: admin" required admin only,
	// while each line reads as a requirement.
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if seen[k] {
			rb.problem(CodeInvalidYAML, fmt.Sprintf("%s section has invalid YAML: key %q is defined twice", section, k))
			return nil, false
		}
		seen[k] = true
	}
	return n, true
}

// parseEnv reads "NAME: description" pairs.
func (rb *Runbook) parseEnv() {
	m, ok := rb.yamlOf(SectionEnv, CodeEnvNoYAML, "Environment Requirements section must contain a YAML code block")
	if !ok || m == nil {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		name, val := m.Content[i].Value, m.Content[i+1]
		if !ValidEnvName(name) {
			rb.problem(CodeBadEnvName, "Invalid environment variable name: "+name)
			continue
		}
		desc := ""
		if val.Kind == yaml.ScalarNode && val.Tag != "!!null" {
			desc = val.Value
		}
		rb.Env = append(rb.Env, EnvVar{Name: name, Description: desc})
	}
}

// parseFiles reads the Input list. Paths are relative to the runbook's
// directory; one that leaves it is refused here (stage0 let it pass
// validation and failed at execute), and so is every input a run could
// not copy, judged on the text: execute refuses the same.
func (rb *Runbook) parseFiles() {
	m, ok := rb.yamlOf(SectionFiles, CodeFilesNoYAML, "File System Requirements section must contain a YAML code block")
	if !ok || m == nil {
		return
	}
	landed := map[string]string{} // name in the run directory → the input that lands there
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != "Input" {
			continue
		}
		list := m.Content[i+1]
		if list.Kind == yaml.ScalarNode && list.Tag == "!!null" {
			return
		}
		if list.Kind != yaml.SequenceNode {
			rb.problem(CodeInvalidYAML, "File System Requirements section: Input must be a list of paths")
			return
		}
		for _, item := range list.Content {
			p := item.Value
			if item.Kind != yaml.ScalarNode || p == "" {
				rb.problem(CodeInvalidYAML, "File System Requirements section: Input must be a list of paths")
				return
			}
			if Escapes(p) {
				rb.problem(CodeInputEscapes, "Input path escapes runbook directory: "+p)
				continue
			}
			name := landing(p)
			if why := unfit(name); why != "" {
				rb.problem(CodeInputInvalid, invalidInput(p, why))
				continue
			}
			if first, dup := landed[name]; dup {
				rb.problem(CodeInputClash, clash(name, first, p))
				continue
			}
			landed[name] = p
			rb.Inputs = append(rb.Inputs, p)
		}
	}
}

// ScriptFile is the name the worker writes a run's script to in the run
// directory (worker/hostpolicy): no input may land there.
const ScriptFile = ".orderly-script"

// landing is the name an input gets in the run directory: its base name,
// as stage0 copied inputs.
func landing(p string) string { return path.Base(path.Clean(p)) }

// unfit says why a name cannot be written into a run directory, or "".
// The worker refuses such a path (worker/hostpolicy safeRel), so the
// service refuses it first, with a code.
func unfit(name string) string {
	switch {
	case name == ".":
		return "it names the runbook directory itself"
	case name == ScriptFile:
		return "the run's script is written to " + ScriptFile
	case strings.ContainsRune(name, '\\'):
		return "a run directory cannot hold a name with a backslash"
	}
	return ""
}

func invalidInput(p, why string) string {
	return "Input path cannot be copied into the run directory: " + p + " (" + why + ")"
}

func clash(name, first, second string) string {
	return "Two inputs land on " + name + " in the run directory: " + first + ", " + second
}

// Escapes reports whether the relative path p names something outside
// the directory it is relative to, judged on the text alone (symlinks are
// the source's business).
func Escapes(p string) bool {
	if path.IsAbs(p) || strings.HasPrefix(p, "\\") || strings.ContainsRune(p, 0) {
		return true
	}
	c := path.Clean(p)
	return c == ".." || strings.HasPrefix(c, "../")
}

// parseClaims reads "claim: a, b" pairs. A YAML list of values is read as
// the same thing (stage0 silently never matched it).
func (rb *Runbook) parseClaims() {
	m, ok := rb.yamlOf(SectionClaims, CodeClaimsNoYAML, "Required Claims section must contain a YAML code block")
	if !ok || m == nil {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		c := Claim{Name: m.Content[i].Value}
		switch val := m.Content[i+1]; val.Kind {
		case yaml.ScalarNode:
			for _, v := range strings.Split(val.Value, ",") {
				if v = strings.TrimSpace(v); v != "" {
					c.Allowed = append(c.Allowed, v)
				}
			}
		case yaml.SequenceNode:
			for _, item := range val.Content {
				if v := strings.TrimSpace(item.Value); v != "" {
					c.Allowed = append(c.Allowed, v)
				}
			}
		default:
			rb.problem(CodeInvalidYAML, "Required Claims section: claim "+c.Name+" must be a comma-separated list of values")
			continue
		}
		rb.Claims = append(rb.Claims, c)
	}
}

// parseScript takes the first sh block. Three backticks inside the script
// end that block early in stage0's parser and in every markdown reader, so
// the script that would run is not the one written: refuse it instead of
// running the part before them.
func (rb *Runbook) parseScript() {
	body, found := rb.Sections[SectionScript]
	if !found || strings.TrimSpace(body) == "" {
		return
	}
	script, rest, ok := block(body, "sh")
	if !ok || strings.TrimSpace(script) == "" {
		// An empty block is no script either: stage0 failed such a run
		// ("Could not extract script from runbook"), and a run of
		// nothing would only pass for a success.
		rb.problem(CodeNoScript, "Script section must contain a sh code block")
		return
	}
	if strings.Contains(script, "```") || strings.Contains(rest, "```") {
		rb.problem(CodeScriptFence, "Script contains ``` (three backticks), which ends its sh code block early: "+
			"write them another way (for example $'\\x60\\x60\\x60')")
		return
	}
	rb.Script = script + "\n"
	// A worker runs only an interpreter its runbooks.interpreters lists,
	// each a clean absolute path: a #! line naming anything else could
	// run on no host, which is told here rather than at every run.
	first, _, _ := strings.Cut(rb.Script, "\n")
	if line, ok := strings.CutPrefix(strings.TrimRight(first, "\r"), "#!"); ok {
		prog, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if prog = strings.TrimSpace(prog); !path.IsAbs(prog) || path.Clean(prog) != prog {
			rb.problem(CodeBadShebang, fmt.Sprintf("The script's #! line must name its interpreter by a clean absolute path, not %q", prog))
		}
	}
}
