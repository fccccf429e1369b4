/*
 * The tiny server the benchmark execs per connection: it writes one line
 * to the connection (fd 1) and exits. Linked statically, so its exec maps
 * no shared library and what is measured is the super-server's own cost
 * (`/bin/true`, dynamically linked, spends more in the loader than most
 * super-servers spend per connection). Built by the benchmark, not shipped.
 */
#include <unistd.h>

int main(void)
{
    static const char line[] = "hello\n";
    return write(1, line, sizeof line - 1) == (ssize_t)(sizeof line - 1) ? 0 : 1;
}
