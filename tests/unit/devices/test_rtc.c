/*
 * Unit tests for devices/legacy/rtc at a fixed fake time: BCD and binary,
 * 12- and 24-hour encodings, the status registers, NVRAM and the
 * memory-size bytes.
 */
#include <criterion/criterion.h>
#include <time.h>

#include "devices/legacy/rtc.h"

static struct rtc *rtc;
static struct timespec fake_now;

static void fake_clock(void *opaque, struct timespec *now)
{
	cr_assert_eq(opaque, &fake_now);
	*now = fake_now;
}

static void set_time(int year, int mon, int mday, int hour, int min, int sec, long nsec)
{
	struct tm tm = {
	    .tm_year = year - 1900,
	    .tm_mon = mon - 1,
	    .tm_mday = mday,
	    .tm_hour = hour,
	    .tm_min = min,
	    .tm_sec = sec,
	};
	fake_now.tv_sec = timegm(&tm);
	fake_now.tv_nsec = nsec;
}

static uint8_t cmos_rd(uint8_t idx)
{
	uint8_t v = 0;
	rtc_bus_ops.write(rtc, 0, &idx, 1);
	rtc_bus_ops.read(rtc, 1, &v, 1);
	return v;
}

static void cmos_wr(uint8_t idx, uint8_t val)
{
	rtc_bus_ops.write(rtc, 0, &idx, 1);
	rtc_bus_ops.write(rtc, 1, &val, 1);
}

static void setup(void)
{
	/* Thursday 2024-02-29 13:05:09.5 UTC */
	set_time(2024, 2, 29, 13, 5, 9, 500000000L);
	cr_assert_eq(rtc_create(&rtc, fake_clock, &fake_now), 0);
}

static void teardown(void)
{
	rtc_destroy(rtc);
	rtc = NULL;
}

TestSuite(devices_rtc, .init = setup, .fini = teardown);

Test(devices_rtc, power_on_registers)
{
	cr_assert_eq(cmos_rd(RTC_REG_A), 0x26, "32.768 kHz base, 1024 Hz rate, UIP clear");
	cr_assert_eq(cmos_rd(RTC_REG_B), 0x02, "24-hour BCD");
	cr_assert_eq(cmos_rd(RTC_REG_D), 0x80, "VRT: valid RAM and time");
}

Test(devices_rtc, time_encodings)
{
	static const struct {
		uint8_t reg_b;
		uint8_t sec, min, hour, dow, mday, mon, year, century;
	} cases[] = {
	    {0x02, 0x09, 0x05, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}, /* BCD, 24h */
	    {0x06, 9, 5, 13, 5, 29, 2, 24, 20},                     /* binary, 24h */
	    {0x00, 0x09, 0x05, 0x81, 0x05, 0x29, 0x02, 0x24, 0x20}, /* BCD, 12h: 1 PM */
	    {0x04, 9, 5, 0x81, 5, 29, 2, 24, 20},                   /* binary, 12h */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cmos_wr(RTC_REG_B, cases[i].reg_b);
		cr_assert_eq(cmos_rd(RTC_SECONDS), cases[i].sec, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_MINUTES), cases[i].min, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_HOURS), cases[i].hour, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_DAY_OF_WEEK), cases[i].dow, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_DAY_OF_MONTH), cases[i].mday, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_MONTH), cases[i].mon, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_YEAR), cases[i].year, "case %zu", i);
		cr_assert_eq(cmos_rd(RTC_CENTURY), cases[i].century, "case %zu", i);
	}
}

Test(devices_rtc, hour_encodings)
{
	static const struct {
		int hour;
		uint8_t bcd24, bin24, bcd12, bin12;
	} cases[] = {
	    {0, 0x00, 0, 0x12, 12},          /* midnight is 12 AM */
	    {1, 0x01, 1, 0x01, 1},           /* 1 AM */
	    {11, 0x11, 11, 0x11, 11},        /* 11 AM */
	    {12, 0x12, 12, 0x92, 0x80 | 12}, /* noon is 12 PM */
	    {23, 0x23, 23, 0x91, 0x80 | 11},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		set_time(1999, 12, 31, cases[i].hour, 59, 59, 0);
		cmos_wr(RTC_REG_B, 0x02);
		cr_assert_eq(cmos_rd(RTC_HOURS), cases[i].bcd24, "case %zu", i);
		cmos_wr(RTC_REG_B, 0x06);
		cr_assert_eq(cmos_rd(RTC_HOURS), cases[i].bin24, "case %zu", i);
		cmos_wr(RTC_REG_B, 0x00);
		cr_assert_eq(cmos_rd(RTC_HOURS), cases[i].bcd12, "case %zu", i);
		cmos_wr(RTC_REG_B, 0x04);
		cr_assert_eq(cmos_rd(RTC_HOURS), cases[i].bin12, "case %zu", i);
	}
	cmos_wr(RTC_REG_B, 0x02);
	cr_assert_eq(cmos_rd(RTC_CENTURY), 0x19);
	cr_assert_eq(cmos_rd(RTC_YEAR), 0x99);
	cr_assert_eq(cmos_rd(RTC_DAY_OF_WEEK), 0x06, "Friday");
}

Test(devices_rtc, time_writes_are_ignored)
{
	cmos_wr(RTC_SECONDS, 0x33);
	cmos_wr(RTC_HOURS, 0x07);
	cmos_wr(RTC_CENTURY, 0x19);
	cr_assert_eq(cmos_rd(RTC_SECONDS), 0x09);
	cr_assert_eq(cmos_rd(RTC_HOURS), 0x13);
	cr_assert_eq(cmos_rd(RTC_CENTURY), 0x20);
}

Test(devices_rtc, uip_only_just_before_the_second)
{
	static const struct {
		long nsec;
		uint8_t uip;
	} cases[] = {
	    {0, 0}, {500000000L, 0}, {999755999L, 0}, {999756000L, 0x80}, {999999999L, 0x80},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fake_now.tv_nsec = cases[i].nsec;
		cr_assert_eq(cmos_rd(RTC_REG_A) & 0x80, cases[i].uip, "case %zu", i);
	}
	cmos_wr(RTC_REG_B, 0x82); /* SET: updates halted */
	cr_assert_eq(cmos_rd(RTC_REG_A) & 0x80, 0, "no update while SET");
	cmos_wr(RTC_REG_B, 0x02);
	cmos_wr(RTC_REG_A, 0x06); /* divider stopped */
	cr_assert_eq(cmos_rd(RTC_REG_A), 0x06, "no update with the oscillator off");
	cmos_wr(RTC_REG_A, 0xa6);
	fake_now.tv_nsec = 0;
	cr_assert_eq(cmos_rd(RTC_REG_A), 0x26, "UIP is read-only");
}

Test(devices_rtc, register_b_set_clears_uie)
{
	cmos_wr(RTC_REG_B, 0x12);
	cr_assert_eq(cmos_rd(RTC_REG_B), 0x12);
	cmos_wr(RTC_REG_B, 0x92);
	cr_assert_eq(cmos_rd(RTC_REG_B), 0x82);
}

Test(devices_rtc, register_c_update_flag_and_clear_on_read)
{
	cr_assert_eq(cmos_rd(RTC_REG_C), 0, "no second has passed since power-on");
	fake_now.tv_sec++;
	cr_assert_eq(cmos_rd(RTC_REG_C), 0x10, "UF");
	cr_assert_eq(cmos_rd(RTC_REG_C), 0, "cleared by the read");
	cmos_wr(RTC_REG_B, 0x12);
	fake_now.tv_sec++;
	cr_assert_eq(cmos_rd(RTC_REG_C), 0x90, "UF with UIE: IRQF");
	cmos_wr(RTC_REG_C, 0xff);
	cr_assert_eq(cmos_rd(RTC_REG_C), 0, "read-only");
}

Test(devices_rtc, register_d_vrt_is_read_only)
{
	cmos_wr(RTC_REG_D, 0x00);
	cr_assert_eq(cmos_rd(RTC_REG_D), 0x80);
}

Test(devices_rtc, nvram_read_write)
{
	static const struct {
		uint8_t idx, val;
	} cases[] = {
	    {0x01, 0x30}, /* seconds alarm */
	    {0x03, 0x15}, /* minutes alarm */
	    {0x05, 0xc0}, /* hours alarm: "don't care" */
	    {0x0e, 0xaa}, {0x10, 0x01}, {0x31, 0x42}, {0x33, 0x00}, {0x5b, 0x7f}, {0x7f, 0xff},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cmos_wr(cases[i].idx, cases[i].val);
		cr_assert_eq(cmos_rd(cases[i].idx), cases[i].val, "case %zu", i);
	}
	for (unsigned idx = 0x0e; idx < 0x80; idx++)
		if (idx != RTC_CENTURY)
			cmos_wr((uint8_t)idx, (uint8_t)(idx ^ 0x5a));
	for (unsigned idx = 0x0e; idx < 0x80; idx++)
		if (idx != RTC_CENTURY)
			cr_assert_eq(cmos_rd((uint8_t)idx), (uint8_t)(idx ^ 0x5a), "idx %#x", idx);
}

Test(devices_rtc, index_bit7_is_the_nmi_mask)
{
	cmos_wr(0x80 | 0x20, 0x5a);
	cr_assert(rtc_nmi_masked(rtc));
	cr_assert_eq(cmos_rd(0x20), 0x5a, "bit 7 is not part of the index");
	cr_assert_not(rtc_nmi_masked(rtc));
	cr_assert_eq(cmos_rd(0x80 | RTC_REG_D), 0x80);
	cr_assert_eq(cmos_rd(0x80 | RTC_SECONDS), 0x09);
	cr_assert(rtc_nmi_masked(rtc));
}

Test(devices_rtc, index_port_reads_ff)
{
	uint8_t v = 0;
	rtc_bus_ops.read(rtc, 0, &v, 1);
	cr_assert_eq(v, 0xff);
}

Test(devices_rtc, word_write_sets_index_then_data)
{
	const uint8_t w[2] = {0x40, 0x77};
	rtc_bus_ops.write(rtc, 0, w, 2);
	cr_assert_eq(cmos_rd(0x40), 0x77);
}

static uint16_t le16_at(uint8_t idx)
{
	return (uint16_t)(cmos_rd(idx) | cmos_rd((uint8_t)(idx + 1)) << 8);
}

Test(devices_rtc, memory_size_bytes)
{
	static const struct {
		uint64_t below, above;
		uint16_t ext_kib, above16;
		uint32_t above4g;
	} cases[] = {
	    {8ull << 20, 0, 7 * 1024, 0, 0},
	    {16ull << 20, 0, 15 * 1024, 0, 0},
	    {512ull << 20, 0, 0xffff, (512 - 16) * 16, 0},
	    {3ull << 30, 5ull << 30, 0xffff, (3072 - 16) * 16, 5 * 16384},
	    {4ull << 30, 2ull << 40, 0xffff, (4096 - 16) * 16, 0xffffff},
	    {1ull << 40, 0, 0xffff, 0xffff, 0}, /* nonsense below 4 GiB: capped */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rtc_set_mem_size(rtc, cases[i].below, cases[i].above);
		cr_assert_eq(le16_at(0x15), 640, "case %zu", i);
		cr_assert_eq(le16_at(0x17), cases[i].ext_kib, "case %zu", i);
		cr_assert_eq(le16_at(0x30), cases[i].ext_kib, "case %zu", i);
		cr_assert_eq(le16_at(0x34), cases[i].above16, "case %zu", i);
		uint32_t hi =
		    cmos_rd(0x5b) | (uint32_t)cmos_rd(0x5c) << 8 | (uint32_t)cmos_rd(0x5d) << 16;
		cr_assert_eq(hi, cases[i].above4g, "case %zu", i);
		unsigned sum = 0;
		for (uint8_t idx = 0x10; idx <= 0x2d; idx++)
			sum += cmos_rd(idx);
		cr_assert_eq((unsigned)(cmos_rd(0x2e) << 8 | cmos_rd(0x2f)), sum & 0xffff,
		             "case %zu: checksum", i);
	}
}

Test(devices_rtc, host_clock_by_default)
{
	struct rtc *r;
	cr_assert_eq(rtc_create(&r, NULL, NULL), 0);
	uint8_t idx = RTC_CENTURY, v = 0;
	rtc_bus_ops.write(r, 0, &idx, 1);
	rtc_bus_ops.read(r, 1, &v, 1);
	cr_assert_eq(v, 0x20, "this century, in BCD");
	rtc_destroy(r);
}
