package kmod

// Match reports whether s matches the shell glob pattern as modprobe
// matches module aliases: fnmatch(3) without flags, so '*' and '?' match
// any character including '/' (DMI aliases hold dates such as
// "bd04/01/2014"), "[...]" is a set with '!' or '^' negating it and
// "a-z" ranges, and '\' quotes the next character. A '[' without its ']'
// is an ordinary character. Unlike path.Match it never fails.
func Match(pattern, s string) bool {
	// Iterative matching with one backtrack point: the last '*' seen. A
	// later '*' supersedes an earlier one, so this is linear in practice
	// and never exponential.
	px, sx := 0, 0
	starP, starS := -1, -1
	for sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				px++
				sx++
				continue
			case '[':
				if ok, n, valid := matchSet(pattern[px:], s[sx]); valid {
					if ok {
						px += n
						sx++
						continue
					}
					break
				}
				if s[sx] == '[' {
					px++
					sx++
					continue
				}
			case '\\':
				if px+1 < len(pattern) {
					if pattern[px+1] == s[sx] {
						px += 2
						sx++
						continue
					}
					break
				}
				if s[sx] == '\\' {
					px++
					sx++
					continue
				}
			default:
				if c == s[sx] {
					px++
					sx++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' eat one more character and try again.
		starS++
		px, sx = starP+1, starS
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// matchSet matches c against the set at the start of p ("[...]"). It
// returns whether c is in the set, the set's length in p, and whether p
// starts with a complete set at all.
func matchSet(p string, c byte) (match bool, n int, valid bool) {
	i := 1
	negate := false
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		negate = true
		i++
	}
	first := true
	for i < len(p) {
		if p[i] == ']' && !first {
			return match != negate, i + 1, true
		}
		first = false
		lo := p[i]
		if lo == '\\' && i+1 < len(p) {
			i++
			lo = p[i]
		}
		i++
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			hi = p[i+1]
			if hi == '\\' && i+2 < len(p) {
				hi = p[i+2]
				i++
			}
			i += 2
		}
		if lo <= c && c <= hi {
			match = true
		}
	}
	return false, 0, false
}
