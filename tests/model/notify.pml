/*
 * The notification rule of core/vmq-abi.h ("Notifications"), as a Promela
 * model for the spin model checker: a guest posting requests and ringing
 * the doorbell only when the monitor's word asks for it, and the poller of
 * core/poller.c polling, stopping, and asking for doorbells again (through
 * vmq_monitor_drain_posts_locked()).  spin explores every interleaving of
 * the two; the property is that no request is left behind: whenever the
 * poller goes to sleep (not polling, no doorbell waiting) after the guest's
 * last post, the ring is empty.
 *
 * Memory is sequentially consistent in the model.  The code gets that
 * where it matters from its two full barriers: the guest's between
 * publishing its producer index and reading the word and the count, the
 * monitor's between storing the word (or the count) and looking at the
 * ring.
 *
 * Variants (spin -D...), each of which must FAIL, which is how
 * tests/model/run shows that the check can fail:
 *   NO_RELOOK   the drain asks for doorbells and does not look once more
 *   SKIP_BY_CONS
 *               the guest skips its doorbell while the ring's consumer
 *               index has not moved since it last rang (instead of
 *               comparing its count of rings with the monitor's count of
 *               doorbells taken): the rule vmq first had, and lost a
 *               wake-up with
 *   NO_SEEN     the monitor never publishes its count of doorbells taken
 */

#define POSTS 4

byte prod, cons;      /* the post ring's indices */
bit word = 1;         /* vmcs.post_doorbell */
byte seen;            /* vmcs.post_doorbells_seen */
byte doorbell;        /* the eventfd's counter */
bit polled;           /* vm->polled (the poller's own state) */
bit guest_done;

/* The guest: POSTS requests, each followed by vmq_post_notify(). */
active proctype guest() {
        byte rings = 0, rang_at = 0;
        bit rang = 0;
        byte i;
        for (i : 1 .. POSTS) {
                prod++;
                /* full barrier */
#ifdef SKIP_BY_CONS
                if
                :: word == 1 && !(rang && cons == rang_at) ->
                        rang = 1;
                        rang_at = cons;
                        doorbell++
                :: else -> skip
                fi
#else
                if
                :: word == 1 && seen == rings ->
                        rings++;
                        doorbell++
                :: else -> skip
                fi
#endif
        }
        guest_done = 1
}

/* The drain of a VM the poller does not poll (or has just stopped
 * polling): take everything, then, with the ring empty, ask for doorbells
 * and look once more. */
inline drain(took) {
        bit armed = 0;
        took = 0;
        do
        :: cons != prod -> cons++; took = 1
        :: else ->
                if
                :: armed || polled || word == 1 -> break
                :: else ->
                        armed = 1;
                        word = 1;
                        /* full barrier */
#ifdef NO_RELOOK
                        break
#else
                        skip
#endif
                fi
        od
}

active proctype poller() {
        bit took;
        byte count;
        do
        /* a doorbell: taken, counted, then the VM is polled */
        :: doorbell > 0 ->
                atomic { count = doorbell; doorbell = 0 };
#ifndef NO_SEEN
                seen = seen + count;
#endif
                /* full barrier */
                polled = 1;
                word = 0
        /* a pass over a polled VM */
        :: polled && cons != prod -> cons = prod
        /* quiet for the window: stop polling; the drain asks for
         * doorbells; work found after all means polling again */
        :: polled ->
                polled = 0;
                drain(took);
                if
                :: took -> polled = 1; word = 0
                :: else -> skip
                fi
        /* asleep in epoll_wait: nothing may be left behind */
        :: !polled && doorbell == 0 && guest_done ->
                assert(cons == prod);
                break
        od
}
