"""The differential tests run the winsock-agent under wine64: they skip, naming the Debian
package, where wine64 or mingw-w64 is missing (`./run tests` installs both, so CI runs them)."""
