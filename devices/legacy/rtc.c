/*
 * MC146818-style CMOS RTC: the index/data port pair, time registers encoded
 * from the (replaceable) host clock on every read, status registers A-D and
 * the NVRAM bytes. The host clock is the truth: guest writes to the time
 * registers are ignored rather than kept as a drifting offset.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "devices/legacy/rtc.h"

#define RTC_NVRAM_SIZE 128
#define INDEX_MASK     0x7f
#define INDEX_NMI_OFF  0x80

#define REG_A_UIP     0x80 /* update in progress */
#define REG_A_DV_MASK 0x70
#define REG_A_DV_32K  0x20 /* divider: 32.768 kHz time base, clock running */
#define REG_A_RS_1024 0x06 /* rate select: 1024 Hz periodic rate */

#define REG_B_SET    0x80 /* updates halted for setting the time */
#define REG_B_UIE    0x10
#define REG_B_DM_BIN 0x04 /* data mode: binary (else BCD) */
#define REG_B_24H    0x02

#define REG_C_IRQF 0x80
#define REG_C_UF   0x10 /* update ended since register C was last read */

#define REG_D_VRT 0x80 /* valid RAM and time: the battery is fine */

#define HOUR_PM 0x80 /* 12-hour mode: bit 7 of the hour byte */

/* The MC146818 raises UIP 244 us before each once-a-second update. */
#define UIP_WINDOW_NS 244000L

struct rtc {
	pthread_mutex_t lock;
	rtc_clock_fn *clock;
	void *clock_opaque;
	uint8_t index;
	bool nmi_masked;
	time_t uf_second; /* the second in which register C was last read */
	/* Registers A, B, the alarms and all plain NVRAM live here by index. */
	uint8_t nvram[RTC_NVRAM_SIZE];
};

static void host_clock(void *opaque, struct timespec *now)
{
	(void)opaque;
	clock_gettime(CLOCK_REALTIME, now);
}

static uint8_t encode(const struct rtc *rtc, unsigned v)
{
	if (rtc->nvram[RTC_REG_B] & REG_B_DM_BIN)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t encode_hour(const struct rtc *rtc, unsigned hour)
{
	if (rtc->nvram[RTC_REG_B] & REG_B_24H)
		return encode(rtc, hour);
	unsigned h12 = hour % 12 ? hour % 12 : 12; /* 00:xx is 12 AM, 12:xx is 12 PM */
	return (uint8_t)(encode(rtc, h12) | (hour >= 12 ? HOUR_PM : 0));
}

static bool clock_running(const struct rtc *rtc)
{
	return (rtc->nvram[RTC_REG_A] & REG_A_DV_MASK) == REG_A_DV_32K &&
	       !(rtc->nvram[RTC_REG_B] & REG_B_SET);
}

/*
 * UIP follows the host clock: set only in the last 244 us of each second,
 * so a guest that waits for it to clear (Linux's mc146818_avoid_UIP) waits at
 * most that long and then has the rest of the second to read a consistent
 * time. It is never set while the clock is stopped.
 */
static uint8_t reg_a(const struct rtc *rtc, const struct timespec *now)
{
	uint8_t a = rtc->nvram[RTC_REG_A] & (uint8_t)~REG_A_UIP;
	if (clock_running(rtc) && now->tv_nsec >= 1000000000L - UIP_WINDOW_NS)
		a |= REG_A_UIP;
	return a;
}

/* Reading C clears it; UF reports that a second boundary passed since the last read. */
static uint8_t reg_c(struct rtc *rtc, const struct timespec *now)
{
	uint8_t c = 0;
	if (clock_running(rtc) && now->tv_sec != rtc->uf_second)
		c |= REG_C_UF;
	if ((c & REG_C_UF) && (rtc->nvram[RTC_REG_B] & REG_B_UIE))
		c |= REG_C_IRQF;
	rtc->uf_second = now->tv_sec;
	return c;
}

static uint8_t cmos_read(struct rtc *rtc, unsigned idx)
{
	struct timespec now;
	struct tm tm;
	rtc->clock(rtc->clock_opaque, &now);
	if (!gmtime_r(&now.tv_sec, &tm))
		memset(&tm, 0, sizeof(tm)); /* a clock beyond struct tm's range */

	switch (idx) {
	case RTC_SECONDS:
		/* A leap second (tm_sec 60) is shown as 59 to stay in range. */
		return encode(rtc, tm.tm_sec > 59 ? 59 : (unsigned)tm.tm_sec);
	case RTC_MINUTES:
		return encode(rtc, (unsigned)tm.tm_min);
	case RTC_HOURS:
		return encode_hour(rtc, (unsigned)tm.tm_hour);
	case RTC_DAY_OF_WEEK:
		return encode(rtc, (unsigned)tm.tm_wday + 1); /* 1 = Sunday */
	case RTC_DAY_OF_MONTH:
		return encode(rtc, (unsigned)tm.tm_mday);
	case RTC_MONTH:
		return encode(rtc, (unsigned)tm.tm_mon + 1);
	case RTC_YEAR:
		return encode(rtc, (unsigned)((tm.tm_year + 1900) % 100));
	case RTC_CENTURY:
		return encode(rtc, (unsigned)((tm.tm_year + 1900) / 100 % 100));
	case RTC_REG_A:
		return reg_a(rtc, &now);
	case RTC_REG_C:
		return reg_c(rtc, &now);
	case RTC_REG_D:
		return REG_D_VRT;
	default: /* register B, the alarms and NVRAM */
		return rtc->nvram[idx];
	}
}

static void cmos_write(struct rtc *rtc, unsigned idx, uint8_t val)
{
	switch (idx) {
	case RTC_SECONDS:
	case RTC_MINUTES:
	case RTC_HOURS:
	case RTC_DAY_OF_WEEK:
	case RTC_DAY_OF_MONTH:
	case RTC_MONTH:
	case RTC_YEAR:
	case RTC_CENTURY:
	case RTC_REG_C:
	case RTC_REG_D:
		break; /* time comes from the host; C and D are read-only */
	case RTC_REG_A:
		rtc->nvram[idx] = val & (uint8_t)~REG_A_UIP;
		break;
	case RTC_REG_B:
		if (val & REG_B_SET)
			val &= (uint8_t)~REG_B_UIE; /* setting SET clears UIE (MC146818) */
		rtc->nvram[idx] = val;
		break;
	default:
		rtc->nvram[idx] = val;
		break;
	}
}

static void rtc_read(void *opaque, uint64_t offset, uint8_t *data, unsigned len)
{
	struct rtc *rtc = opaque;
	pthread_mutex_lock(&rtc->lock);
	for (unsigned i = 0; i < len; i++) {
		if (offset + i == 1)
			data[i] = cmos_read(rtc, rtc->index);
		else
			data[i] = 0xff; /* the index port is write-only */
	}
	pthread_mutex_unlock(&rtc->lock);
}

static void rtc_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned len)
{
	struct rtc *rtc = opaque;
	pthread_mutex_lock(&rtc->lock);
	for (unsigned i = 0; i < len; i++) {
		if (offset + i == 0) {
			rtc->index = data[i] & INDEX_MASK;
			rtc->nmi_masked = data[i] & INDEX_NMI_OFF;
		} else if (offset + i == 1) {
			cmos_write(rtc, rtc->index, data[i]);
		}
	}
	pthread_mutex_unlock(&rtc->lock);
}

const struct bus_ops rtc_bus_ops = {
    .name = "rtc",
    .read = rtc_read,
    .write = rtc_write,
};

int rtc_create(struct rtc **out, rtc_clock_fn *clock, void *opaque)
{
	struct rtc *rtc = calloc(1, sizeof(*rtc));
	if (!rtc)
		return -ENOMEM;
	int err = pthread_mutex_init(&rtc->lock, NULL);
	if (err) {
		free(rtc);
		return -err;
	}
	rtc->clock = clock ? clock : host_clock;
	rtc->clock_opaque = opaque;
	rtc->nvram[RTC_REG_A] = REG_A_DV_32K | REG_A_RS_1024;
	rtc->nvram[RTC_REG_B] = REG_B_24H;
	struct timespec now;
	rtc->clock(rtc->clock_opaque, &now);
	rtc->uf_second = now.tv_sec;
	*out = rtc;
	return 0;
}

static void put16(struct rtc *rtc, unsigned idx, uint64_t v)
{
	rtc->nvram[idx] = (uint8_t)v;
	rtc->nvram[idx + 1] = (uint8_t)(v >> 8);
}

void rtc_set_mem_size(struct rtc *rtc, uint64_t ram_below_4g, uint64_t ram_above_4g)
{
	const uint64_t kib = 1024, mib = 1024 * kib;
	uint64_t ext_kib = ram_below_4g > mib ? (ram_below_4g - mib) / kib : 0;
	uint64_t above16 = ram_below_4g > 16 * mib ? (ram_below_4g - 16 * mib) >> 16 : 0;
	uint64_t above4g = ram_above_4g >> 16;

	pthread_mutex_lock(&rtc->lock);
	put16(rtc, 0x15, 640);
	put16(rtc, 0x17, ext_kib > 0xffff ? 0xffff : ext_kib);
	put16(rtc, 0x30, ext_kib > 0xffff ? 0xffff : ext_kib);
	put16(rtc, 0x34, above16 > 0xffff ? 0xffff : above16);
	if (above4g > 0xffffff)
		above4g = 0xffffff; /* 24 bits of 64 KiB units: 1 TiB */
	rtc->nvram[0x5b] = (uint8_t)above4g;
	rtc->nvram[0x5c] = (uint8_t)(above4g >> 8);
	rtc->nvram[0x5d] = (uint8_t)(above4g >> 16);

	/* The AT checksum covers 0x10-0x2d, big-endian at 0x2e/0x2f. */
	unsigned sum = 0;
	for (unsigned i = 0x10; i <= 0x2d; i++)
		sum += rtc->nvram[i];
	rtc->nvram[0x2e] = (uint8_t)(sum >> 8);
	rtc->nvram[0x2f] = (uint8_t)sum;
	pthread_mutex_unlock(&rtc->lock);
}

bool rtc_nmi_masked(struct rtc *rtc)
{
	pthread_mutex_lock(&rtc->lock);
	bool masked = rtc->nmi_masked;
	pthread_mutex_unlock(&rtc->lock);
	return masked;
}

void rtc_destroy(struct rtc *rtc)
{
	if (!rtc)
		return;
	pthread_mutex_destroy(&rtc->lock);
	free(rtc);
}
