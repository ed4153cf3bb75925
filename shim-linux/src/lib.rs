//! placeholder
#![no_std]
#[cfg(not(target_os = "none"))]
extern crate std;
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
