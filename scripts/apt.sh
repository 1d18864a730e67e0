# apt.sh: sourced (never run) by the ensure-*.sh scripts, which each need a
# tool that a Debian package has. Its functions end the calling script with
# exit 0 once the tool is there, and return when they cannot try, so the
# caller says what to install by hand.

# apt_install MESSAGE PACKAGE...: as root with apt-get, say MESSAGE and
# install the packages.
apt_install() {
	msg=$1
	shift
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "$msg" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq "$@" >/dev/null
		exit 0
	fi
}

# apt_extract PACKAGE BINARY: with apt-get and dpkg-deb, take usr/bin/BINARY
# from Debian's PACKAGE into bin/ (of the current directory) without
# installing the package (no service, no user): apt-get download, then
# extract that binary alone.
apt_extract() {
	if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		if [ "$(id -u)" = 0 ]; then
			apt-get update -qq
			chmod 0777 "$tmp" # apt downloads as the _apt user
		fi
		echo "$2 not found: extracting it from the Debian $1 package into bin/" >&2
		(cd "$tmp" && apt-get download -qq "$1")
		dpkg-deb -x "$tmp/$1"_*.deb "$tmp/x"
		mkdir -p bin
		cp "$tmp/x/usr/bin/$2" "bin/$2"
		exit 0
	fi
}
