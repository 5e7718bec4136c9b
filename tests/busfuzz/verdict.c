/* SPDX-License-Identifier: MIT */
/*
 * Which answers are allowed, and the table of findings.
 *
 * An error reply from vmqd is allowed when its name is
 *   - an org.vmq1.Error.* name that vmqd/DBUS-API.md documents, for a call
 *     that reaches vmqd's own code (the right signature, on an object that
 *     has the method) and that is not a non-member's mutating call;
 *   - one of sd-bus's standard names for what the call got wrong, and only
 *     then: UnknownMethod, UnknownObject and UnknownInterface for a call
 *     to a method, object or interface that is not there (or may have gone:
 *     a machine undefined meanwhile); InvalidArgs for arguments that are not
 *     the method's signature (or an interface or property name that is not
 *     one); UnknownProperty and PropertyReadOnly for Properties calls;
 *   - AccessDenied for a mutating call by a non-member, which must get
 *     nothing else.
 * Everything else is a finding, System.Error.* first of all.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/busfuzz/busfuzz.h"

unsigned fz_nonfatal;

static const char *const class_names[_FZ_CLASS_MAX] = {
        [FZ_ERRORS] = "errors",       [FZ_ACCESS] = "access",   [FZ_ACCEPTED] = "accepted",
        [FZ_STALL] = "stall",         [FZ_RECEIVE] = "receive", [FZ_REPLY] = "reply",
        [FZ_RESOURCES] = "resources", [FZ_DAEMON] = "daemon",
};

const char *fz_class_name(int klass) {
        return klass >= 0 && klass < _FZ_CLASS_MAX ? class_names[klass] : "?";
}

int fz_class_from_name(const char *name) {
        for (int i = 0; i < _FZ_CLASS_MAX; i++)
                if (strcmp(name, class_names[i]) == 0)
                        return i;
        return -1;
}

/* The names vmqd/DBUS-API.md documents; this list when it is not given. */
static const char *const builtin_documented[] = {
        "org.vmq1.Error.NoSuchMachine",
        "org.vmq1.Error.NoSuchChannel",
        "org.vmq1.Error.MachineExists",
        "org.vmq1.Error.InvalidArgument",
        "org.vmq1.Error.Busy",
        "org.vmq1.Error.NotRunning",
        "org.vmq1.Error.QueueFull",
        "org.vmq1.Error.TimedOut",
        "org.vmq1.Error.ChannelClosed",
        "org.vmq1.Error.NotAnEnd",
        "org.vmq1.Error.TooLarge",
        "org.vmq1.Error.BadImage",
        "org.vmq1.Error.NoSuchImage",
        "org.vmq1.Error.LimitReached",
        "org.vmq1.Error.NoMemory",
        "org.vmq1.Error.BadFileDescriptor",
        "org.vmq1.Error.BackendUnavailable",
};

#define MAX_DOCUMENTED 64
static char documented[MAX_DOCUMENTED][80];
static unsigned n_documented;

int fz_load_documented(const char *api_doc) {
        static const char prefix[] = "org.vmq1.Error.";
        FILE *f;
        char line[4096];

        n_documented = 0;
        if (!api_doc) {
                for (size_t i = 0; i < sizeof(builtin_documented) / sizeof(builtin_documented[0]);
                     i++)
                        snprintf(documented[n_documented++], sizeof(documented[0]), "%s",
                                 builtin_documented[i]);
                return 0;
        }
        f = fopen(api_doc, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                for (char *p = strstr(line, prefix); p; p = strstr(p + 1, prefix)) {
                        size_t len = strlen(prefix);
                        while (isalnum((unsigned char)p[len]))
                                len++;
                        if (len == strlen(prefix) || len >= sizeof(documented[0]))
                                continue;
                        bool seen = false;
                        for (unsigned i = 0; i < n_documented; i++)
                                if (strncmp(documented[i], p, len) == 0 && !documented[i][len])
                                        seen = true;
                        if (!seen && n_documented < MAX_DOCUMENTED)
                                snprintf(documented[n_documented++], sizeof(documented[0]), "%.*s",
                                         (int)len, p);
                }
        }
        fclose(f);
        return n_documented > 0 ? 0 : -ENOENT;
}

unsigned fz_documented_count(void) {
        return n_documented;
}

bool fz_is_documented(const char *name) {
        for (unsigned i = 0; i < n_documented; i++)
                if (strcmp(documented[i], name) == 0)
                        return true;
        return false;
}

void fz_report(struct fz_shared *sh, int klass, const char *name, const char *call, const char *fmt,
               ...) {
        char key[160], text[200];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        snprintf(key, sizeof(key), "%s %s", fz_class_name(klass), name);
        pthread_mutex_lock(&sh->lock);
        sh->counts[klass]++;
        for (unsigned i = 0; i < sh->n_findings; i++)
                if (strcmp(sh->findings[i].key, key) == 0) {
                        sh->findings[i].count++;
                        pthread_mutex_unlock(&sh->lock);
                        return;
                }
        if (sh->n_findings >= FZ_MAX_FINDINGS) {
                sh->dropped++;
                pthread_mutex_unlock(&sh->lock);
                return;
        }
        struct fz_finding *f = &sh->findings[sh->n_findings++];
        snprintf(f->key, sizeof(f->key), "%s", key);
        snprintf(f->call, sizeof(f->call), "%s", call ? call : "");
        snprintf(f->text, sizeof(f->text), "%s", text);
        f->count = 1;
        f->klass = klass;
        printf("busfuzz: %s [%s] %s\n    call: %s\n    said: %s\n",
               fz_nonfatal & (1u << klass) ? "FINDING (non-fatal)" : "FAIL", fz_class_name(klass),
               name, call ? call : "-", text);
        fflush(stdout);
        pthread_mutex_unlock(&sh->lock);
}

static const struct {
        const char *name;
        unsigned bit;
} standard[] = {
        {"org.freedesktop.DBus.Error.UnknownMethod", A_UNKNOWN_METHOD},
        {"org.freedesktop.DBus.Error.UnknownObject", A_UNKNOWN_OBJECT},
        {"org.freedesktop.DBus.Error.UnknownInterface", A_UNKNOWN_INTERFACE},
        {"org.freedesktop.DBus.Error.UnknownProperty", A_UNKNOWN_PROPERTY},
        {"org.freedesktop.DBus.Error.InvalidArgs", A_INVALID_ARGS},
        {"org.freedesktop.DBus.Error.PropertyReadOnly", A_READ_ONLY},
        {"org.freedesktop.DBus.Error.AccessDenied", A_ACCESS_DENIED},
};

void fz_judge_error(struct fz_shared *sh, const struct fz_call *call, bool member,
                    const sd_bus_error *e) {
        const char *name = e->name ? e->name : "(no name)";
        const char *text = e->message ? e->message : "";
        char what[200];
        unsigned bit = 0;
        bool vmq = strncmp(name, "org.vmq1.Error.", 15) == 0;

        for (size_t i = 0; i < sizeof(standard) / sizeof(standard[0]); i++)
                if (strcmp(name, standard[i].name) == 0)
                        bit = standard[i].bit;

        /* A non-member's call that would change something: AccessDenied, or
         * the standard answers for a call that does not reach the method. */
        if (!member && call->mutating && call->valid_signature) {
                if (bit && (call->allow & bit))
                        return;
                if (vmq || bit) {
                        snprintf(what, sizeof(what), "%s to a non-member, not AccessDenied", name);
                        fz_report(sh, FZ_ACCESS, what, call->desc, "%s", text);
                        return;
                }
                fz_report(sh, FZ_ERRORS, name, call->desc, "%s", text);
                return;
        }
        if (bit == A_ACCESS_DENIED && (member || !call->mutating)) {
                snprintf(what, sizeof(what), "AccessDenied to a %s, for %s",
                         member ? "member" : "non-member", call->member);
                fz_report(sh, member ? FZ_ERRORS : FZ_ACCESS, what, call->desc, "%s", text);
                return;
        }
        if (bit) {
                if (call->allow & bit)
                        return;
                snprintf(what, sizeof(what), "%s for %s", name, call->member);
                fz_report(sh, FZ_ERRORS, what, call->desc, "%s", text);
                return;
        }
        if (vmq && fz_is_documented(name) && (call->allow & A_VMQ))
                return;
        if (vmq && fz_is_documented(name)) {
                snprintf(what, sizeof(what), "%s for %s", name, call->member);
                fz_report(sh, FZ_ERRORS, what, call->desc,
                          "%s (a call that cannot reach vmqd's code)", text);
                return;
        }
        snprintf(what, sizeof(what), "%s from %s", name, call->member);
        fz_report(sh, FZ_ERRORS, what, call->desc, "%s", text);
}

bool fz_judge_success(struct fz_shared *sh, const struct fz_call *call, bool member) {
        char what[200];

        if (!member && call->mutating && call->valid_signature) {
                snprintf(what, sizeof(what), "%s succeeded for a non-member", call->member);
                fz_report(sh, FZ_ACCESS, what, call->desc, "a mutating call must be refused");
                return false;
        }
        if (call->must_fail) {
                snprintf(what, sizeof(what), "%s accepted %s", call->member,
                         call->why ? call->why : "an invalid argument");
                fz_report(sh, FZ_ACCEPTED, what, call->desc,
                          "a call with %s must fail (vmqd/DBUS-API.md, issue 8)",
                          call->why ? call->why : "an invalid argument");
                return false;
        }
        return true;
}

void fz_count_member(struct fz_shared *sh, const char *member, bool ok) {
        unsigned i;
        /* one writer: the worker */
        for (i = 0; i < sh->n_members; i++)
                if (strcmp(sh->members[i].name, member) == 0)
                        break;
        if (i == sh->n_members) {
                if (i >= sizeof(sh->members) / sizeof(sh->members[0]))
                        return;
                snprintf(sh->members[i].name, sizeof(sh->members[i].name), "%s", member);
                sh->n_members++;
        }
        if (ok)
                sh->members[i].ok++;
        else
                sh->members[i].calls++;
}
