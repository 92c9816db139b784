/*
 * Fuzz target "qcow_tool": the qcow-tool commands that read and repair an
 * untrusted image (tools/qcow-tool: check, check -r leaks|all, info,
 * map, resize; hostile inputs 14, 15, 18), through their real argv entry
 * points on a memfd image. Input: [0] which command, then the image.
 * Invariant: the documented exit statuses only, and a repaired image
 * checks clean of corruptions afterwards when its repair said it fixed them.
 */
#define FUZZ_TARGET qcow_tool
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <unistd.h>

#include "tools/qcow-tool/qcow-tool.h"

static int call(int (*fn)(int, char **), const char *a0, const char *a1, const char *a2,
                const char *a3)
{
	char *argv[6] = {(char *)a0, (char *)a1, (char *)a2, (char *)a3, NULL, NULL};
	int argc = a3 ? 4 : a2 ? 3 : 2;
	return fn(argc, argv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int fd = fuzz_memfd("fuzz-qcow-tool", data + 1, size - 1);
	if (fd < 0)
		return 0;
	char path[64];
	fuzz_fd_path(fd, path, sizeof(path));
	int r;
	switch (data[0] % 8) {
	case 0:
		r = call(cmd_check, "check", path, NULL, NULL);
		FUZZ_CHECK(r == 0 || r == 1 || r == 2 || r == 3 || r == 63, "check exit %d", r);
		break;
	case 1:
		r = call(cmd_check, "check", "--output=json", path, NULL);
		FUZZ_CHECK(r == 0 || r == 1 || r == 2 || r == 3 || r == 63, "check exit %d", r);
		break;
	case 2:
	case 3:
		r = call(cmd_check, "check", "-r", data[0] % 8 == 2 ? "leaks" : "all", path);
		FUZZ_CHECK(r == 0 || r == 1 || r == 2 || r == 3 || r == 63, "check -r exit %d", r);
		if (r == 0) {
			/* Repaired (or clean): a second look must agree. */
			int again = call(cmd_check, "check", path, NULL, NULL);
			FUZZ_CHECK(again == 0, "clean after repair, then check says %d", again);
		}
		break;
	case 4:
		r = call(cmd_info, "info", path, NULL, NULL);
		FUZZ_CHECK(r == 0 || r == 1, "info exit %d", r);
		break;
	case 5:
		r = call(cmd_info, "info", "--output=json", path, NULL);
		FUZZ_CHECK(r == 0 || r == 1, "info exit %d", r);
		break;
	case 6:
		r = call(cmd_map, "map", "--output=json", path, NULL);
		FUZZ_CHECK(r == 0 || r == 1, "map exit %d", r);
		break;
	case 7:
		r = call(cmd_resize, "resize", path, data[0] & 8 ? "+64K" : "+1M", NULL);
		FUZZ_CHECK(r == 0 || r == 1, "resize exit %d", r);
		break;
	}
	close(fd);
	return 0;
}
