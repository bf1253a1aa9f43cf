// Command hello is what the payload tests compile.
package main

import "fmt"

func main() { fmt.Println("hello") }
