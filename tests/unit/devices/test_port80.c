/*
 * Unit tests for devices/legacy/port80: the last POST code reads back and
 * writes are counted.
 */
#include <criterion/criterion.h>

#include "devices/legacy/port80.h"

Test(devices_port80, records_last_value)
{
	struct port80 *p;
	cr_assert_eq(port80_create(&p), 0);
	cr_assert_eq(port80_last(p), 0);
	static const uint8_t codes[] = {0x01, 0x55, 0xff, 0x00, 0x80};
	for (size_t i = 0; i < sizeof(codes); i++) {
		port80_bus_ops.write(p, 0, &codes[i], 1);
		uint8_t v = 0x33;
		port80_bus_ops.read(p, 0, &v, 1);
		cr_assert_eq(v, codes[i], "case %zu", i);
		cr_assert_eq(port80_last(p), codes[i], "case %zu", i);
	}
	cr_assert_eq(port80_writes(p), sizeof(codes));
	uint8_t wide[4] = {0};
	port80_bus_ops.read(p, 0, wide, 4);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(wide[i], 0x80);
	port80_destroy(p);
}
