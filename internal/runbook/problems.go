package runbook

// Code is the stable code of a runbook problem: clients may switch on it,
// while Message is the text a person reads (stage0's exact text where
// stage0 had one, COMPAT.md §3).
type Code string

// The closed set of problem codes.
const (
	CodeEmpty          Code = "runbook_empty"             // Runbook content is empty
	CodeTooLarge       Code = "runbook_too_large"         // the file is over 4 MiB: not read
	CodeNoTitle        Code = "runbook_no_title"          // no leading "# <name>" line
	CodeMissingSection Code = "runbook_missing_section"   // Missing required section: <S>
	CodeEmptySection   Code = "runbook_empty_section"     // Section '<S>' is empty
	CodeDupSection     Code = "runbook_duplicate_section" // Section '<S>' appears more than once
	CodeUnclosedFence  Code = "runbook_unclosed_fence"    // a ``` block never closes
	CodeEnvNoYAML      Code = "runbook_env_no_yaml"       // Environment Requirements section must contain a YAML code block
	CodeFilesNoYAML    Code = "runbook_files_no_yaml"     // File System Requirements section must contain a YAML code block
	CodeClaimsNoYAML   Code = "runbook_claims_no_yaml"    // Required Claims section must contain a YAML code block
	CodeInvalidYAML    Code = "runbook_invalid_yaml"      // a YAML block that does not parse or has the wrong shape
	CodeBadEnvName     Code = "runbook_bad_env_name"      // Invalid environment variable name: <k>
	CodeNoScript       Code = "runbook_no_script"         // Script section must contain a sh code block
	CodeScriptFence    Code = "runbook_script_backticks"  // ``` inside the script would end it early
	CodeBadShebang     Code = "runbook_bad_interpreter"   // a #! line that names no absolute interpreter path
	CodeInputEscapes   Code = "runbook_input_escapes"     // Input path escapes runbook directory: <p>
	CodeInputMissing   Code = "runbook_input_missing"     // Required input file does not exist: <p>
	CodeInputInvalid   Code = "runbook_input_invalid"     // an input no run directory can hold (".", .orderly-script, a backslash, not a file or directory)
	CodeInputClash     Code = "runbook_input_clash"       // two inputs land on the same name in the run directory
	CodeInputUnread    Code = "runbook_input_unreadable"  // an input file the service cannot read
	CodeInputsTooLarge Code = "runbook_inputs_too_large"  // script and input files over runbooks.max_input_bytes
	CodeEnvNotSet      Code = "runbook_env_not_set"       // Required environment variable not set: <V>
	CodeEnvRefused     Code = "runbook_env_refused"       // a variable the service's env_deny or env_allow refuses
)

// Problem is one reason a runbook cannot run.
type Problem struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Messages returns the messages of problems, as stage0's errors list.
func Messages(problems []Problem) []string {
	out := make([]string, len(problems))
	for i, p := range problems {
		out[i] = p.Message
	}
	return out
}
