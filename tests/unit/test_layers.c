/* The library layering of ARCHITECTURE.md, checked on the built archives (tools/check-layers). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/facility.h"

Test(lint, layering, .timeout = 60)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "python3 %s %s", SOURCE_PATH("tools/check-layers"),
		 RINGVM_BUILD_DIR);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	char out[8192];
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	int st = pclose(p);
	cr_assert_eq(st, 0, "%s", out);
	cr_assert_not_null(strstr(out, "0 violations"), "%s", out);
}
