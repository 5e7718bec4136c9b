#include "guest/vmq-guest.h"
int vmq_main(void) {
        return 0;
}
